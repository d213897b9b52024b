"""mmdetection integration: necks whose upsampling steps take any registered upsampler."""
