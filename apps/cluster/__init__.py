"""omc cluster: the multi-stream runtime on Ray workers spread over machines (the 'cluster' extra).

A stream worker (worker.py) is one `StreamRuntime` inside a Ray actor, reserving the CPUs / GPUs
of the [cluster] table; frames are decoded and tracked where it runs and never cross the network.
The driver (controller.py, `omc cluster run`) plans the workers from the streams file
(placement.py: placements, pins, round-robin within each placement), collects every worker's
results and health, writes the results files itself (one writer: a dead worker leaves nothing
half-written), moves a dead worker's streams to the live ones with a new epoch and an id
offset, and publishes the status table that `omc cluster status` reads from any shell
(status.py). ray_session.py starts a local Ray on 127.0.0.1 or joins a cluster.

The [cluster] table of the streams file (omc.config.ClusterConfig; every key optional)::

    [cluster]
    workers = 2              # workers for the unpinned streams (0: per streams_per_worker)
    cpus_per_worker = 1      # Ray CPUs each reserves (ONNX Runtime threads per operator too)
    gpus_per_worker = 0      # Ray GPUs each reserves: set it where the engines run on a GPU
    streams_per_worker = 0   # most streams per worker (0: no limit)

Per stream: `node = "10.0.0.7"` (a node id, IP or key=value node label) pins it to that machine;
`resources = { site_b = 1 }` makes its worker ask for custom Ray resources (a machine started
with `ray start --resources='{"site_b": 4}'`). See placement.py and controller.py for the rules.

Nothing here is imported by omc.runtime, which never imports Ray.
"""
