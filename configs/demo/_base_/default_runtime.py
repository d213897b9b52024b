# Runtime shared by the demo configs (CPU, iteration-based, seeded). The data bases inherit
# it and add the registry scope, the visualiser and its hook.
custom_imports = dict(
    imports=['mmdysample', 'mmdysample.datasets', 'mmdysample.engine'],
    allow_failed_imports=False)
# RandomStateHook keeps the generator states in the checkpoints: `--resume` then continues
# exactly as the uninterrupted run would have (tests/demo/test_runner_reliability.py).
custom_hooks = [dict(type='RandomStateHook')]

default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=25, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=100000, max_keep_ckpts=1,
                    save_last=True),
    sampler_seed=dict(type='DistSamplerSeedHook'))

# gloo: the demo and its tests run on CPU, also when launched with tools/dist_train.sh.
env_cfg = dict(
    cudnn_benchmark=False,
    mp_cfg=dict(mp_start_method='fork', opencv_num_threads=0),
    dist_cfg=dict(backend='gloo'))

vis_backends = [dict(type='LocalVisBackend')]
log_processor = dict(type='LogProcessor', window_size=25, by_epoch=False)
log_level = 'INFO'
load_from = None
resume = False
randomness = dict(seed=0, deterministic=False)
