"""3D morphable face models, their parameter layout (3DDFA's 62 numbers), statistics and pose."""
