"""Files on disk: write-ahead logs, Parquet fragments and the manifest that lists them."""
