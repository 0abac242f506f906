"""Model archive builder (``python -m model_store.build``). Built ``*.mar`` files are not committed."""
