"""Annotation: span revisions under If-Match, edit operations, review workflow, queue, segmenter stats."""
