"""OTLP/HTTP trace ingest for the store server: ``POST /v1/traces`` (protobuf or JSON).

:mod:`.decode` turns an ``ExportTraceServiceRequest`` into store spans and answers in OTLP's terms,
:mod:`.routes` is the route (registered through ``agl_register_server_routes``), :mod:`.plugin`
registers it lazily.
"""
