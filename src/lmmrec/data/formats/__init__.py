"""Readers and writers of outside data formats: MMRec folders and generic CSV/Parquet tables.

Each reader returns a :class:`lmmrec.data.Dataset` and raises :class:`lmmrec.errors.DataError`
(or :class:`lmmrec.errors.FeatureError`) naming the file, the problem and the fix.
"""
