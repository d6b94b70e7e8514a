"""Pure frame and chunk operators: detectors, anonymizers, zones, temporal fill, codecs.

Imports only numpy, cv2, onnxruntime, av and :mod:`schemas`; never Kafka, Ray or MinIO,
so it can be used as a library ("redact this file") anywhere.
"""

from .types import Anonymizer, Boxes, Detector, Frames, Label, VeilStreamError

__all__ = ["Anonymizer", "Boxes", "Detector", "Frames", "Label", "VeilStreamError"]
