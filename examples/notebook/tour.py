# ruff: noqa: B018 - a cell's last expression is what the notebook displays
# %% [markdown]
# # undertow in a notebook
#
# A tour in cells (`# %%` marks a cell: JupyterLab with jupytext, VS Code and PyCharm open
# this file as a notebook; `jupytext --to notebook tour.py` makes a `.ipynb`). Run the
# cells one by one and watch where each output lands. docs/guide.md, "In a notebook", explains how.
#
# For the tour the server runs inside the kernel; usually it is on another machine and you
# only `undertow.connect()` to it.

# %%
import time

import numpy

import undertow

server = undertow.Server(name="tour")


@server.register
def train(epochs: int = 3, pause: float = 0.3) -> float:
    """Pretend to train a model, printing the loss after each epoch.

    ``pause`` is how long an epoch takes, in seconds.
    """
    loss = 1.0
    for epoch in range(1, epochs + 1):
        time.sleep(pause)  # the work
        loss /= 2
        print(f"epoch {epoch}: loss {loss:.3f}")
    return loss


@server.register
def explode(value: int) -> int:
    """Fail, to show a remote traceback."""
    doubled = value * 2
    raise ValueError(f"value {doubled} is out of range")


address = server.start("tcp://127.0.0.1:0")
client = undertow.connect(address)
client  # the server's functions, with their signatures and docstrings

# %% A call: its lines show under this cell as they come, then its result.
client.train(epochs=2)

# %% A future: its lines keep coming under *this* cell while you run the next ones.
future = client.train.submit(epochs=4)

# %% Runs while the future's train() still prints above. Try `client.train?` and `client.<Tab>`.
help(client.train)

# %% A pointer: the array stays on the server; the table says what it is and where.
ptr = undertow.put(numpy.arange(1_000_000).reshape(1000, 1000), to=client)
ptr

# %% A cluster of worker processes on this machine, for durable jobs.
cluster = undertow.Cluster(workers=2)
cluster


# %% A job: what it prints shows under this cell, as it comes.
def square(x: int) -> int:
    time.sleep(0.1)  # the work
    print(f"squaring {x}")
    return x * x


job = cluster.submit(square, 7)
job

# %% A map with a progress bar (a widget here), then the results.
jobs = cluster.map(square, range(20), progress=True)
[j.result() for j in jobs]

# %% A remote error: run `client.explode(21)` in a cell of its own to see the remote
# traceback (the server's file and line) above the error raised here.
try:
    client.explode(21)
except ValueError as exc:
    print(f"raised here: {exc!r}")

# %% Done: stop what the tour started.
future.result()
cluster.close()
client.close()
server.stop()
