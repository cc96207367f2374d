"""SAIR's torch modules, one file per part of the network.

Import submodules directly (``from sair_deploy.model.sair import SAIR``); this package's
``config`` module is importable without torch, so the torch-free runtime can read configs.
"""
