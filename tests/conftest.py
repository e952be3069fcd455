import os

# The tiny model is so small that torch's intra-op threads cost more than they give, and
# the test-suite runs subprocesses side by side on 2 cores: one thread each is fastest.
os.environ.setdefault("OMP_NUM_THREADS", "1")
# No progress bars in test output.
os.environ.setdefault("PETTINGLLMS_PROGRESS", "0")
