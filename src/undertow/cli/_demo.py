"""placeholder"""


def run_demo(timeout: float) -> int:
    return 0
