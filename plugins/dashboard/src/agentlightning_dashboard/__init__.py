"""The Agent Lightning dashboard: a page the store server shows at ``/`` and the ``agl dashboard`` command.

:mod:`.routes` holds the page and its reads (registered through ``agl_register_server_routes``),
:mod:`.cli` the command (``agl_register_commands``); :mod:`.plugin` registers both lazily.
"""
