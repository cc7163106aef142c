//! GPU memory in use per CUDA slot, read through NVML. libtorch has no API for it;
//! NVML is loaded at run time, so a machine without the NVIDIA driver simply exports
//! no GPU memory metrics.

use nvml_wrapper::Nvml;
use tracing::{debug, info};

use crate::device::Slot;

/// One device's memory at the time of reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMemory {
    /// The slot's name, `cuda:<index>`.
    pub device: String,
    pub used: u64,
    pub total: u64,
}

/// How NVML finds the device behind a CUDA index.
#[derive(Debug, Clone, PartialEq, Eq)]
enum NvmlDevice {
    Index(u32),
    Uuid(String),
}

/// NVML plus the CUDA slots to report.
pub struct GpuMemory {
    nvml: Nvml,
    devices: Vec<(String, NvmlDevice)>,
}

impl GpuMemory {
    /// Opens NVML for the CUDA slots among `slots`; None when there are none or NVML
    /// cannot be loaded. `cuda_visible_devices` is that variable's value, which renumbers
    /// the devices CUDA sees.
    pub fn open(slots: &[Slot], cuda_visible_devices: Option<&str>) -> Option<Self> {
        let devices: Vec<(String, NvmlDevice)> = slots
            .iter()
            .filter_map(|slot| match slot {
                Slot::Cuda(i) => nvml_device(*i, cuda_visible_devices).map(|d| (slot.name(), d)),
                Slot::Cpu => None,
            })
            .collect();
        if devices.is_empty() {
            return None;
        }
        match Nvml::init() {
            Ok(nvml) => {
                info!(devices = devices.len(), "reading GPU memory through NVML");
                Some(Self { nvml, devices })
            }
            Err(e) => {
                info!(error = %e, "NVML is not available: no GPU memory metrics");
                None
            }
        }
    }

    /// Memory of every device NVML can read now; a device it cannot read is left out.
    pub fn read(&self) -> Vec<DeviceMemory> {
        self.devices
            .iter()
            .filter_map(|(name, which)| {
                let device = match which {
                    NvmlDevice::Index(i) => self.nvml.device_by_index(*i),
                    NvmlDevice::Uuid(uuid) => self.nvml.device_by_uuid(uuid.as_str()),
                };
                let memory = device.and_then(|d| d.memory_info());
                match memory {
                    Ok(m) => Some(DeviceMemory {
                        device: name.clone(),
                        used: m.used,
                        total: m.total,
                    }),
                    Err(e) => {
                        debug!(device = %name, error = %e, "reading GPU memory failed");
                        None
                    }
                }
            })
            .collect()
    }
}

/// The NVML device behind CUDA index `cuda`. CUDA_VISIBLE_DEVICES lists indices or
/// UUIDs; NVML numbers devices by PCI bus, which matches CUDA's order when
/// CUDA_DEVICE_ORDER=PCI_BUS_ID (and on machines with one GPU model). MIG instances are
/// not mapped.
fn nvml_device(cuda: usize, cuda_visible_devices: Option<&str>) -> Option<NvmlDevice> {
    let Some(visible) = cuda_visible_devices
        .map(str::trim)
        .filter(|v| !v.is_empty())
    else {
        return u32::try_from(cuda).ok().map(NvmlDevice::Index);
    };
    let entry = visible.split(',').map(str::trim).nth(cuda)?;
    if let Ok(index) = entry.parse::<u32>() {
        Some(NvmlDevice::Index(index))
    } else if entry.starts_with("GPU-") {
        Some(NvmlDevice::Uuid(entry.to_owned()))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuda_indices_follow_cuda_visible_devices() {
        assert_eq!(nvml_device(1, None), Some(NvmlDevice::Index(1)));
        assert_eq!(nvml_device(0, Some("")), Some(NvmlDevice::Index(0)));
        assert_eq!(nvml_device(1, Some("3, 5")), Some(NvmlDevice::Index(5)));
        assert_eq!(
            nvml_device(0, Some("GPU-8e2a,1")),
            Some(NvmlDevice::Uuid("GPU-8e2a".into()))
        );
        assert_eq!(nvml_device(2, Some("3,5")), None);
        assert_eq!(nvml_device(0, Some("MIG-abc")), None);
    }

    #[test]
    fn cpu_only_workers_do_not_load_nvml() {
        assert!(GpuMemory::open(&[Slot::Cpu], None).is_none());
    }

    /// Needs an NVIDIA GPU and driver: `cargo test -p foldtrain-worker -- --ignored nvml`.
    #[test]
    #[ignore = "needs an NVIDIA GPU with its driver"]
    fn nvml_reads_the_memory_of_cuda_0() {
        let gpu = GpuMemory::open(&[Slot::Cuda(0)], None).expect("NVML loads");
        let memory = gpu.read();
        assert_eq!(memory.len(), 1, "{memory:?}");
        assert_eq!(memory[0].device, "cuda:0");
        assert!(
            memory[0].total > 0 && memory[0].used <= memory[0].total,
            "{memory:?}"
        );
    }
}
