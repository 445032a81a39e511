"""Object storage: ``s3://bucket/prefix`` data directories and landing prefixes (S3 and compatibles).

The pipeline's stages read and write a local data directory; on object storage a run works in a local
working copy of the data directory (:mod:`.sync`) and publishes what it wrote, one object per file, the
manifest last. Dumps landing on a prefix are listed complete-only and streamed into local scratch
(:mod:`.landing`). Analysts query the published Parquet in place (:mod:`.warehouse`).
"""
