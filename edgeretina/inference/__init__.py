"""Using an exported model on this machine: open it with the config it carries (``modelfile``), check it
before any image is scored (``integrity``), run it on the CPU (``litert``: LiteRT for .tflite, ``keras``:
Keras for .keras, ``cpu.load_cpu``: which runner a model gets, the int8-guard cascade included) and score
fundus photos with it (``predict``: ``edgeretina predict``).

The inference layer sits between ``edgeretina.converters`` (which makes the files) and
``edgeretina.benchmarks`` (which measures them): ``predict`` is an app-facing use of a model and depends on
no benchmark module; the bench runs its ``cpu`` device through the same code. No TensorFlow at import.
"""
