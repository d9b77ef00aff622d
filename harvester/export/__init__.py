"""Export: the store's answers → a clean, documented training dataset.

`pipeline.run_export` joins the steps; it is imported on use, since `datasets` is slow to import.
"""
