"""The torch-free runtime: backends around the two engines, NumPy post-processing and the tracker."""
