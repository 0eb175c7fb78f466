"""Names for the XID codes an inference host is likely to see (after NVIDIA's XID catalogue), and how bad each is.

Severity: "app" — usually the application's fault (bad address, illegal instruction), the GPU is fine;
"recoverable" — the driver recovered, watch the rate; "fatal" — the GPU needs a reset or replacement.
"""
from __future__ import annotations

# code -> (short name, severity)
XIDS: dict[int, tuple[str, str]] = {
    8: ("gpu_stopped_processing", "recoverable"),
    13: ("graphics_engine_exception", "app"),
    31: ("gpu_memory_page_fault", "app"),
    32: ("invalid_push_buffer_stream", "recoverable"),
    38: ("driver_firmware_error", "recoverable"),
    43: ("gpu_stopped_processing_app", "app"),
    45: ("preemptive_cleanup", "app"),
    48: ("double_bit_ecc_error", "fatal"),
    56: ("display_engine_error", "recoverable"),
    57: ("video_memory_interface_error", "fatal"),
    61: ("internal_microcontroller_breakpoint", "recoverable"),
    62: ("internal_microcontroller_halt", "fatal"),
    63: ("row_remap_or_page_retirement_event", "recoverable"),
    64: ("row_remap_or_page_retirement_failure", "fatal"),
    68: ("video_decoder_exception", "app"),
    69: ("graphics_engine_class_error", "app"),
    74: ("nvlink_error", "fatal"),
    79: ("gpu_fallen_off_bus", "fatal"),
    92: ("high_single_bit_ecc_rate", "recoverable"),
    94: ("contained_ecc_error", "recoverable"),
    95: ("uncontained_ecc_error", "fatal"),
    109: ("context_switch_timeout", "recoverable"),
    110: ("security_fault", "fatal"),
    119: ("gsp_rpc_timeout", "fatal"),
    120: ("gsp_error", "fatal"),
    121: ("c2c_link_error", "recoverable"),
    122: ("spi_pmu_rpc_read_failure", "recoverable"),
    123: ("spi_pmu_rpc_write_failure", "recoverable"),
    136: ("link_training_failure", "fatal"),
    140: ("unrecovered_ecc_error", "fatal"),
    143: ("gpu_initialization_failure", "fatal"),
    144: ("nvlink_sau_error", "recoverable"),
    145: ("nvlink_rlw_error", "recoverable"),
    146: ("nvlink_tlw_error", "recoverable"),
    147: ("nvlink_trex_error", "recoverable"),
    148: ("nvlink_nvlpw_ctrl_error", "recoverable"),
    149: ("nvlink_netir_error", "recoverable"),
    150: ("nvlink_msework_error", "recoverable"),
    154: ("gpu_recovery_action_changed", "recoverable"),
    155: ("nvlink_sw_defined_error", "recoverable"),
    999: ("unknown_xid", "recoverable"),
}


def xid_name(code: int) -> str:
    """A short name for an XID code; 'xid_<code>' when it is not in the table."""
    entry = XIDS.get(code)
    return entry[0] if entry else f"xid_{code}"


def xid_severity(code: int) -> str:
    entry = XIDS.get(code)
    return entry[1] if entry else "unknown"
