"""Installing a build to a machine's own disk: the settings, the GPT layout, the A/B slots, boot entries.

Pure: nothing here touches a disk. ``settings`` holds what the inventory may say (``install: ram|disk``
and the ``disk_*`` variables), ``layout`` plans the partitions, ``slots`` keeps the A/B bookkeeping and
``entries`` names systemd-boot's boot-counting entries.
"""
