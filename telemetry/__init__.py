"""What a device knows about itself, and the observation a policy sees.

Kept free of heavy imports (numpy only): the simulator (``envs``) and the on-device
controller (``runtime_hooks``) both build observations with ``build_observation``, and
the controller must not pay for gymnasium or torch to do it.
"""
