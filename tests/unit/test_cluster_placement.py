"""omc cluster's plan (no Ray): placement groups, round-robin, pins and their refusals, the
[cluster] table, moving a stream to the least-loaded worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from omc.apps.cluster.placement import (
    NodeInfo, Placement, choose_worker, cluster_config, plan_cluster, placement_of, resource_demand,
)  # fmt: skip
from omc.apps.streams_file import StreamEntry, load_streams_file
from omc.config import ClusterConfig
from omc.errors import BadInput
from omc.runtime.streams import StreamSpec

HEAD = NodeInfo("n-head", "10.0.0.1", {"site": "a"}, {"CPU": 4.0})
SITE_B = NodeInfo("n-b", "10.0.0.2", {"site": "b"}, {"CPU": 2.0, "site_b": 4.0})


def entry(name: str, **placement) -> StreamEntry:
    return StreamEntry(StreamSpec(name, Path(f"{name}.mp4")), placement=placement)


def test_round_robin_in_file_order_within_each_placement():
    entries = [entry("a"), entry("b"), entry("door", node="site=b"), entry("c"), entry("gate", node="10.0.0.2")]
    plan = plan_cluster(entries, ClusterConfig(workers=2), [HEAD, SITE_B], "run")
    # Unpinned: 2 workers, a/c on w1, b on w2. Each pin is its own group with one worker (no
    # streams_per_worker limit) pinned to the matching machine.
    assert plan.assignment == {"a": "run-w1", "b": "run-w2", "c": "run-w1", "door": "run-w3", "gate": "run-w4"}
    assert [(w.name, w.node_id) for w in plan.workers] == [("run-w1", None), ("run-w2", None), ("run-w3", "n-b"), ("run-w4", "n-b")]
    assert plan.streams_of("run-w1") == ["a", "c"]


def test_streams_per_worker_sizes_the_groups_and_custom_resources_go_to_the_worker():
    entries = [entry(f"s{i}") for i in range(5)] + [entry("x", resources={"site_b": 1}), entry("y", resources={"site_b": 1})]
    config = ClusterConfig(streams_per_worker=2, cpus_per_worker=0.5)
    plan = plan_cluster(entries, config, [HEAD, SITE_B], "r")
    # ceil(5 / 2) = 3 unpinned workers, ceil(2 / 2) = 1 for site_b; 4 x 0.5 CPU fit 6 CPUs.
    assert [w.name for w in plan.workers] == ["r-w1", "r-w2", "r-w3", "r-w4"]
    assert plan.workers[3].custom_resources == {"site_b": 1.0} and plan.workers[3].node_id is None
    assert resource_demand(entries, config) == (2.0, 0.0)
    with pytest.raises(BadInput, match=r"workers = 2 with streams_per_worker = 2 hold 4 streams, but 5 streams have no pin"):
        plan_cluster(entries[:5], ClusterConfig(workers=2, streams_per_worker=2), [HEAD], "r")


@pytest.mark.parametrize(
    ("placement", "message"),
    [
        ({"node": "site=c"}, "stream cam is pinned to node 'site=c' but no machine of the Ray cluster matches it (machines: 10.0.0.1 (site=a); 10.0.0.2 (site=b; site_b=4))"),
        ({"resources": {"site_c": 1}}, "stream cam needs a worker with site_c=1, CPU=1 but no machine of the Ray cluster has them"),
        # The node matches, but it lacks the resource.
        ({"node": "site=a", "resources": {"site_b": 1}}, "stream cam needs a worker with site_b=1, CPU=1 but no machine"),
        ({"resources": {"site_b": 5}}, "stream cam needs a worker with site_b=5, CPU=1"),
    ],
)
def test_a_pin_no_machine_meets_is_refused(placement, message):
    with pytest.raises(BadInput) as caught:
        plan_cluster([entry("ok"), entry("cam", **placement)], ClusterConfig(), [HEAD, SITE_B], "r")
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_workers_beyond_the_cluster_s_cpus_or_gpus_are_refused():
    with pytest.raises(BadInput, match=r"7 workers x 1 CPU do not fit the Ray cluster's 6 CPUs"):
        plan_cluster([entry(f"s{i}") for i in range(7)], ClusterConfig(workers=7), [HEAD, SITE_B], "r")
    with pytest.raises(BadInput, match=r"needs a worker with CPU=1, GPU=1"):
        plan_cluster([entry("a")], ClusterConfig(gpus_per_worker=1), [HEAD], "r")


def test_placement_keys_are_checked():
    assert placement_of(entry("a", resources={"z": 1, "a": 2.5})) == Placement(None, (("a", 2.5), ("z", 1.0)))
    for bad, fragment in (
        ({"node": ""}, "node must be a non-empty string"),
        ({"resources": {"site": 0}}, "resource site must be a positive number"),
        ({"resources": {"GPU": 1}}, "CPUs and GPUs come from [cluster]"),
        ({"resources": [1]}, "resources must be a table"),
    ):
        with pytest.raises(BadInput, match=fragment.replace("[", r"\[")):
            placement_of(entry("a", **bad))


def test_save_video_is_refused():
    item = StreamEntry(StreamSpec("a", Path("a.mp4")), save_video=Path("a.mp4"))
    with pytest.raises(BadInput, match="save_video is not available with omc cluster"):
        plan_cluster([item], ClusterConfig(), [HEAD], "r")


def test_cluster_table_from_a_streams_file(tmp_path):
    path = tmp_path / "s.toml"
    path.write_text('[[streams]]\nurl = "a.mp4"\nnode = "site=b"\n[cluster]\nworkers = 3\ncpus_per_worker = 2\n')
    streams = load_streams_file(path)
    assert cluster_config(streams.cluster) == ClusterConfig(workers=3, cpus_per_worker=2.0)
    assert placement_of(streams.streams[0]) == Placement("site=b")
    with pytest.raises(BadInput, match=r"\[cluster\]: unknown option\(s\) worker; known: workers"):
        cluster_config({"worker": 2})
    with pytest.raises(BadInput, match=r"cpus_per_worker must be a positive number"):
        cluster_config({"cpus_per_worker": 0})


def test_a_moved_stream_goes_to_the_least_loaded_worker_of_its_placement():
    any_machine, site_b = Placement(), Placement("site=b")
    loads = {"w1": (any_machine, 3), "w2": (any_machine, 1), "w3": (site_b, 0), "w4": (any_machine, 1)}
    assert choose_worker(any_machine, loads, limit=0) == "w2"  # fewest streams; ties: the earlier
    assert choose_worker(site_b, loads, limit=0) == "w3"  # never a worker of another placement
    assert choose_worker(any_machine, {"w1": (any_machine, 2)}, limit=2) is None  # full: a replacement is needed
    assert choose_worker(Placement("site=c"), loads, limit=0) is None
