//! Which devices this process can train on: one slot per visible CUDA GPU, or the CPU.

use tch::Device;

/// A place one fold trains at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Cpu,
    Cuda(usize),
}

impl Slot {
    pub fn device(self) -> Device {
        match self {
            Slot::Cpu => Device::Cpu,
            Slot::Cuda(i) => Device::Cuda(i),
        }
    }

    /// Wire form: the GPU index, or -1 for the CPU.
    pub fn index(self) -> i32 {
        match self {
            Slot::Cpu => -1,
            Slot::Cuda(i) => i as i32,
        }
    }

    pub fn name(self) -> String {
        match self {
            Slot::Cpu => "cpu".to_string(),
            Slot::Cuda(i) => format!("cuda:{i}"),
        }
    }
}

/// What libtorch reports about the devices of this machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Runtime {
    pub cuda_available: bool,
    pub cuda_devices: usize,
    pub cudnn_available: bool,
    /// Whether `libtorch_cuda.so` is mapped into this process.
    pub cuda_library_loaded: bool,
}

impl Runtime {
    pub fn detect() -> Self {
        Self {
            cuda_available: tch::Cuda::is_available(),
            cuda_devices: tch::Cuda::device_count().max(0) as usize,
            cudnn_available: tch::Cuda::cudnn_is_available(),
            cuda_library_loaded: library_mapped("libtorch_cuda.so"),
        }
    }
}

/// The slots to serve: the requested GPUs, every visible GPU, or the CPU.
pub fn select_slots(
    gpus: Option<&[usize]>,
    force_cpu: bool,
    runtime: &Runtime,
) -> Result<Vec<Slot>, String> {
    if force_cpu {
        return Ok(vec![Slot::Cpu]);
    }
    match gpus {
        Some(list) => {
            if let Some(&bad) = list.iter().find(|&&i| i >= runtime.cuda_devices) {
                return Err(format!(
                    "--gpus names GPU {bad}, but libtorch sees {} CUDA device(s); use --cpu to train on the CPU",
                    runtime.cuda_devices
                ));
            }
            Ok(list.iter().map(|&i| Slot::Cuda(i)).collect())
        }
        None if runtime.cuda_available && runtime.cuda_devices > 0 => {
            Ok((0..runtime.cuda_devices).map(Slot::Cuda).collect())
        }
        None => Ok(vec![Slot::Cpu]),
    }
}

fn library_mapped(name: &str) -> bool {
    std::fs::read_to_string("/proc/self/maps")
        .map(|maps| maps.lines().any(|l| l.ends_with(name)))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Kind, Tensor};

    #[test]
    fn libtorch_links_and_reports_cuda() {
        let t = Tensor::arange(6, (Kind::Float, Device::Cpu)).reshape([2, 3]);
        assert_eq!(t.sum(Kind::Float).double_value(&[]), 15.0);
        let runtime = Runtime::detect();
        eprintln!("libtorch runtime: {runtime:?}");
        // The PyTorch wheel ships libtorch_cuda.so beside libtorch.so; when it is there,
        // the link must have pulled it in, or CUDA would silently be missing on GPU boxes.
        let lib_dir = env!("FOLDTRAIN_LIBTORCH_LIB");
        let shipped = std::path::Path::new(lib_dir)
            .join("libtorch_cuda.so")
            .exists();
        assert_eq!(
            runtime.cuda_library_loaded, shipped,
            "libtorch_cuda.so in {lib_dir}: {shipped}"
        );
        if runtime.cuda_available {
            let on_gpu = t.to_device(Device::Cuda(0));
            assert_eq!(on_gpu.sum(Kind::Float).double_value(&[]), 15.0);
        }
    }

    #[test]
    fn slot_selection() {
        let cpu_only = Runtime {
            cuda_available: false,
            cuda_devices: 0,
            cudnn_available: false,
            cuda_library_loaded: true,
        };
        assert_eq!(
            select_slots(None, false, &cpu_only).unwrap(),
            vec![Slot::Cpu]
        );
        let err = select_slots(Some(&[0]), false, &cpu_only).unwrap_err();
        assert!(err.contains("--gpus names GPU 0"), "{err}");
        let two = Runtime {
            cuda_available: true,
            cuda_devices: 2,
            cudnn_available: true,
            cuda_library_loaded: true,
        };
        assert_eq!(
            select_slots(None, false, &two).unwrap(),
            vec![Slot::Cuda(0), Slot::Cuda(1)]
        );
        assert_eq!(
            select_slots(Some(&[1]), false, &two).unwrap(),
            vec![Slot::Cuda(1)]
        );
        assert_eq!(select_slots(None, true, &two).unwrap(), vec![Slot::Cpu]);
    }
}
