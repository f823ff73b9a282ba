"""Your own videos -> YouTube-8M records (`extract`) and labels (`predict`)."""
