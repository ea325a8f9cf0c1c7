"""The wire contracts as JSON Schema, for programs that are not this one.

One file per topic's record, generated from the pydantic models in `core.contracts` and
`core.snapshot` (which remain the definition) by `python -m schemas.json_schema`;
`tests/test_json_schemas.py` checks that the checked-in files are what the models generate.
"""
