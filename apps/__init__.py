"""The tools around the runtime: what the `omc` command does with the embeddable core.

`omc.runtime` is what an application embeds (engines, tracker, sources, streams); `omc.apps`
holds the command-line tools built on it: `omc track` and its results files and overlay video,
`omc eval` (MOTChallenge metrics). Nothing in `omc.runtime` imports from here.
"""
