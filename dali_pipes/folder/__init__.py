"""Image-folder datasets (ImageNet layout) and the source and loader base the folder families share."""
