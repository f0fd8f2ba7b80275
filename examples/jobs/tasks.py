"""Functions a worker runs by name: ``undertow worker --module tasks``."""


def resize(path: str, width: int) -> str:
    """Pretend to resize an image; what it prints is kept with the job."""
    print(f"resizing {path} to {width} px")
    return f"{path.removesuffix('.png')}-{width}.png"
