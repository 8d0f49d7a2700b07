"""References to images that are not files: ``retinamnist://<split>/<index>`` (a row of the
RetinaMNIST arrays) and ``synthetic://[radiograph/]<size>/<seed>/<index>/<grade>`` (an image drawn
on demand by :mod:`odmaug.data.synthetic` or :mod:`odmaug.data.radiograph`)."""

RETINAMNIST_SCHEME = "retinamnist://"
SYNTHETIC_SCHEME = "synthetic://"
SCHEMES = (RETINAMNIST_SCHEME, SYNTHETIC_SCHEME)
