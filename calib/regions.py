"""Which nodes of an exported graph `omc quantize` keeps in float, found from the graph's shape.

Regions are defined by topology, not by node names (which belong to the exporter), so they hold
for every variant, input size and exporter version:

- "similarity": nodes reached from the re-check's `tracklets` input without passing through a
  convolution: tracklet normalisation, the similarity MatMul, the shrink window, aggregation and
  max-normalisation of Ms. An 8-bit cosine has a step of 1/127 at best, enough to move the
  window centre (an argmax over near-equal similarities) and every value of Ms after it.
- "head": convolutions with no convolution after them: the last layer of every output path
  (Detect's 1x1 convs, DenseMask's projections, SAAN's embedding conv, the re-check box and
  heat-map convs). Their outputs are scores, box offsets and embeddings themselves: 8 bits
  over an output's whole range cost whole pixels of box and most of a low score's value.
- "tail": every other node with no convolution after it: sigmoids and box decode, top-K and the
  gathers at the candidates' cells, the L2 normalisation of the ID map, the re-check's peak
  suppression and top-P. They are cheap, and in 8 bits top-K would rank quantised scores.
- "body": the rest, the backbone, neck, CCN and SAAN feature layers, where the time is spent.

Convolutions are the ONNX operators Conv and ConvTranspose.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import onnx

from omc import contract
from omc.config import FLOAT_REGIONS

CONV_OPS = frozenset({"Conv", "ConvTranspose"})
BODY = "body"
HEAD, TAIL, SIMILARITY = FLOAT_REGIONS


@dataclass(frozen=True)
class GraphRegions:
    """Node names of one graph by region (each tuple in graph order)."""

    body: tuple[str, ...]
    head: tuple[str, ...]
    tail: tuple[str, ...]
    similarity: tuple[str, ...]

    def of(self, region: str) -> tuple[str, ...]:
        """The nodes of `region` (one of FLOAT_REGIONS or "body")."""
        if region not in (BODY, *FLOAT_REGIONS):
            raise ValueError(f"unknown region '{region}'")
        names: tuple[str, ...] = getattr(self, region)
        return names

    def kept_float(self, regions: tuple[str, ...]) -> list[str]:
        """Node names of the given float regions, in region order."""
        return [name for region in regions for name in self.of(region)]

    def counts(self) -> dict[str, int]:
        return {region: len(self.of(region)) for region in (BODY, *FLOAT_REGIONS)}


def name_nodes(model: onnx.ModelProto) -> None:
    """Give every unnamed node a unique name (`<op>_<index>`), in place: quantizers exclude by name."""
    used = {node.name for node in model.graph.node if node.name}
    for index, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_{index}"
            while name in used:
                name += "_"
            node.name = name
            used.add(name)


def classify_nodes(model: onnx.ModelProto) -> GraphRegions:
    """Split the nodes of a topologically sorted graph into the regions of the module docstring.

    model: an ONNX model whose nodes all have names (see `name_nodes`). Subgraphs (If, Loop) are
    not looked into; the contract's graphs have none.
    """
    nodes = list(model.graph.node)
    consumers: dict[str, list[int]] = defaultdict(list)
    for index, node in enumerate(nodes):
        for name in node.input:
            if name:
                consumers[name].append(index)

    # A node has a convolution after it when one of its consumers is one or has one after it.
    # Nodes are in topological order, so one backward sweep settles every node.
    conv_after = [False] * len(nodes)
    for index in range(len(nodes) - 1, -1, -1):
        for output in nodes[index].output:
            for consumer in consumers.get(output, ()):
                if nodes[consumer].op_type in CONV_OPS or conv_after[consumer]:
                    conv_after[index] = True
                    break
            if conv_after[index]:
                break

    # Similarity: reached from `tracklets` along paths without a convolution (forward sweep).
    from_tracklets = {contract.TRACKLETS} if any(i.name == contract.TRACKLETS for i in model.graph.input) else set()
    similarity = [False] * len(nodes)
    for index, node in enumerate(nodes):
        if node.op_type not in CONV_OPS and any(name in from_tracklets for name in node.input):
            similarity[index] = True
            from_tracklets.update(node.output)

    region_of = [
        SIMILARITY if similarity[index] else BODY if conv_after[index] else HEAD if node.op_type in CONV_OPS else TAIL
        for index, node in enumerate(nodes)
    ]
    # A body node that only feeds similarity nodes (the reshape of `id_embeddings` before the
    # similarity MatMul) belongs to the similarity (backward sweep, so chains of them follow).
    for index in range(len(nodes) - 1, -1, -1):
        node = nodes[index]
        if region_of[index] != BODY or node.op_type in CONV_OPS:
            continue
        users = [consumer for output in node.output for consumer in consumers.get(output, ())]
        if users and all(region_of[user] == SIMILARITY for user in users):
            region_of[index] = SIMILARITY

    regions: dict[str, list[str]] = {BODY: [], HEAD: [], TAIL: [], SIMILARITY: []}
    for node, region in zip(nodes, region_of):
        regions[region].append(node.name)
    return GraphRegions(*(tuple(regions[key]) for key in (BODY, HEAD, TAIL, SIMILARITY)))
