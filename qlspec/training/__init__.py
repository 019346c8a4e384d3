"""Float (and, through hooks, quantisation-aware) training of the 3DDFA regressor."""
