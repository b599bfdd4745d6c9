"""Property-based fuzzing of the ScalingProfile API: generated profiles across
every section, hostile strings included (``strategies``), and the oracle every
one of them must satisfy (``oracle``): refused naming a field, or planned and
rendered without a crash. The real programs that read what is rendered
(tests/conformance/fuzz_programs.py) and the real API server
(tests/e2e/fuzz_api.py) are the other two judges; ``make fuzz``
(bench/fuzz.py) runs all three long.
"""
