"""Flow-log replay: readers (Zeek, Argus, CSV) and the replay engine (layer 4).

May import guard, tracker and report; nothing below imports it.
"""
