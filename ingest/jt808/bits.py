"""Alarm and status flags of 0x0200 by name (JT/T 808-2013 and -2019, tables 24 and 25).

The two editions agree on most bits; where they differ the 2019 meaning is
listed in the ``*_2019`` table. Names are stable identifiers used in alarms,
the API and the web page.
"""

from __future__ import annotations

from collections.abc import Mapping

__all__ = [
    "ALARM_BITS_2013",
    "ALARM_BITS_2019",
    "STATUS_ACC",
    "STATUS_BITS_2013",
    "STATUS_BITS_2019",
    "STATUS_LOCATED",
    "STATUS_SOUTH",
    "STATUS_WEST",
    "alarm_names",
    "status_names",
]

# JT/T 808-2013 table 24 (alarm flags).
ALARM_BITS_2013: Mapping[int, str] = {
    0: "emergency",
    1: "overspeed",
    2: "fatigue_driving",
    3: "danger_warning",
    4: "gnss_module_fault",
    5: "gnss_antenna_disconnected",
    6: "gnss_antenna_short_circuit",
    7: "main_power_undervoltage",
    8: "main_power_cut",
    9: "display_fault",
    10: "tts_module_fault",
    11: "camera_fault",
    12: "ic_card_module_fault",
    13: "overspeed_warning",
    14: "fatigue_driving_warning",
    18: "daily_driving_overtime",
    19: "overtime_parking",
    20: "area_in_out",
    21: "route_in_out",
    22: "route_time_abnormal",
    23: "route_deviation",
    24: "vss_fault",
    25: "fuel_abnormal",
    26: "vehicle_stolen",
    27: "illegal_ignition",
    28: "illegal_displacement",
    29: "collision_warning",
    30: "rollover_warning",
    31: "illegal_door_open",
}

# JT/T 808-2019 table 24: bit 3 became "dangerous driving behaviour", bits 15–17
# were added (15 = driving in a forbidden time window), bit 31 is reserved.
ALARM_BITS_2019: Mapping[int, str] = {
    **{k: v for k, v in ALARM_BITS_2013.items() if k != 31},
    3: "dangerous_driving",
    15: "forbidden_time_driving",
    16: "tire_pressure_warning",
    17: "right_turn_blind_zone",
}

# JT/T 808-2013 table 25 (status flags); bits 8–9 are the load state (2 bits).
STATUS_BITS_2013: Mapping[int, str] = {
    0: "acc_on",
    1: "located",
    2: "south_latitude",
    3: "west_longitude",
    4: "out_of_service",
    5: "coordinates_encrypted",
    8: "load_state_bit0",
    9: "load_state_bit1",
    10: "oil_circuit_cut",
    11: "electric_circuit_cut",
    12: "doors_locked",
    13: "door1_open",
    14: "door2_open",
    15: "door3_open",
    16: "door4_open",
    17: "door5_open",
    18: "gps_used",
    19: "beidou_used",
    20: "glonass_used",
    21: "galileo_used",
}

# JT/T 808-2019 table 25 adds bit 22: the vehicle is moving.
STATUS_BITS_2019: Mapping[int, str] = {**STATUS_BITS_2013, 22: "moving"}

STATUS_ACC = 1 << 0
STATUS_LOCATED = 1 << 1
STATUS_SOUTH = 1 << 2
STATUS_WEST = 1 << 3


def _names(bits: int, table: Mapping[int, str]) -> list[str]:
    out: list[str] = []
    for bit in range(32):
        if bits >> bit & 1:
            out.append(table.get(bit, f"bit{bit}"))
    return out


def alarm_names(bits: int, version: int = 2013) -> list[str]:
    """Names of the alarm bits set in ``bits`` (unknown bits as ``bitN``)."""
    return _names(bits, ALARM_BITS_2019 if version >= 2019 else ALARM_BITS_2013)


def status_names(bits: int, version: int = 2013) -> list[str]:
    """Names of the status bits set in ``bits`` (unknown bits as ``bitN``)."""
    return _names(bits, STATUS_BITS_2019 if version >= 2019 else STATUS_BITS_2013)
