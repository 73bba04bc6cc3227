"""Blocks of the provision example: a VM on AWS (EC2) and its interface config on a NETCONF device."""
