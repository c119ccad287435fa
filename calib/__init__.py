"""INT8 calibration data and quantized graphs."""
