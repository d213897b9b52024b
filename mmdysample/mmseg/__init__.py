"""mmsegmentation integration: heads and pixel decoders whose upsampling steps take any registered upsampler."""
