# Short iteration-based schedule for the demo models (batch 8, 300 iterations = 3 epochs of
# the 800 synthetic training images): AdamW (converges much faster than SGD on small models
# trained from scratch), linear warm-up then cosine decay, one validation and one checkpoint
# at the end (default_runtime.py: save_last). `tools/demo.py --iters N` stretches it.
max_iters = 300
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=2e-3, betas=(0.9, 0.999), weight_decay=0.05),
    clip_grad=dict(max_norm=10.0, norm_type=2))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', by_epoch=False, begin=30, end=max_iters, eta_min=2e-5)
]
