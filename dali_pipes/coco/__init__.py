"""COCO/LVIS json: the validating reader, the packed on-disk index, image headers, `decal check` and the embedded sample data."""
