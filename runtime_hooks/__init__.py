"""What runs on the device and in the cloud with a trained policy.

* ``policy_file`` / ``export``: a PPO run as a numpy-only policy file;
* ``controller``: telemetry + observation + policy -> action, on the device;
* ``protocol``: the validated binary frames between device and cloud;
* ``server``: the cloud process that runs the model's tail from any cut (asyncio TCP);
* ``relay``: a TCP relay that shapes the link to a bandwidth trace and its RTT;
* ``device``: the on-device inference loop (real model head, exits, codecs, fallback);
* ``sim2real``: the same requests through the simulator and the real loop, compared.

Kept free of imports here: the controller must load without torch or gymnasium.
"""
