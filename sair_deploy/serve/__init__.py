"""Inpainting as a service: ``sair-serve`` (NVIDIA Triton via PyTriton) and its client.

``job`` and ``protocol`` need only the base install; ``server`` and ``client`` need the ``serve``
extra (nvidia-pytriton, tritonclient).
"""
