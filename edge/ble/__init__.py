"""Bluetooth LE loggers: advert decoding (:mod:`.decode`), and the thin scanner layers that
feed adverts to it (:mod:`.scanner`). Decoding never needs a radio."""
