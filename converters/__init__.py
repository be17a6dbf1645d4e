"""Export backends, installed as ``edgeretina.converters`` (the source folder is ``converters/``)."""
