"""Rules: turns stored readings into excursions.

Importable as ``coldtrail.rules``. This is the first, simplest rule: a reading outside its
location's range opens an excursion for that sensor, the next reading back in range closes it.
"""
