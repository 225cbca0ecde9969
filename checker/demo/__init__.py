"""The bundled demo: example traces, and demo traffic made from them."""
