#!/usr/bin/env bash
# Installs the pinned DeepSpeed into the active virtualenv (torch must be there already: the
# build compiles against it) with the ops a worker of this image loads compiled now. An op
# compiled at first use (JIT) needs a compiler the runtime image does not have, and a JIT
# build's file lock, left by a killed worker, makes every later worker wait forever.
# Runs in the trainer image's builder stage. Usage: install-deepspeed.sh cpu|cuda PINS_FILE
set -euo pipefail
accelerator=$1
pins=$2

case $accelerator in
  cpu)
    # Exactly as `make setup`: the shm_comm op, DeepSpeed's CPU collectives. No pip cache: a
    # cached wheel may have been built without it (or for another accelerator).
    DS_ACCELERATOR=cpu DS_BUILD_OPS=0 DS_BUILD_SHM_COMM=1 \
      pip install --no-cache-dir --no-build-isolation -r "$pins"
    python -c "from deepspeed.git_version_info import installed_ops as o; \
assert o['deepspeed_shm_comm'], 'deepspeed was installed without its shm_comm op'"
    ;;
  cuda)
    # No GPU is needed to compile CUDA ops, only nvcc: NVIDIA publishes it on PyPI, in the
    # version of the CUDA libraries torch came with (cuda-toolkit's nvcc and cccl extras), so
    # it goes into the venv beside them for the build and is uninstalled after.
    # fused_adam is the AdamW every GPU plan uses (DeepSpeed's FusedAdam). Compute
    # capabilities: $CUDA_ARCHS (A100, H100/H200, B200 and PTX for newer GPUs by default).
    toolkit=$(python -c "import importlib.metadata as m; print(m.version('cuda-toolkit'))")
    pip install "cuda-toolkit[nvcc,cccl]==$toolkit"
    # CUDA 13's wheels share one tree, nvidia/cu13 (CUDA 12's had a folder per library).
    cuda_home=$(python -c "import sysconfig, torch; \
print(f\"{sysconfig.get_paths()['purelib']}/nvidia/cu{torch.version.cuda.split('.')[0]}\")")
    if [[ ! -x $cuda_home/bin/nvcc ]]; then
      echo "install-deepspeed.sh: no nvcc in $cuda_home (a CUDA 13 torch is needed)" >&2
      exit 1
    fi
    # torch links -lcudart from CUDA_HOME/lib64; the wheels ship lib/libcudart.so.N only.
    ln -sfn lib "$cuda_home/lib64"
    cudart=$(find "$cuda_home/lib" -name 'libcudart.so.*' -printf '%f\n' | sort | head -n 1)
    ln -sf "$cudart" "$cuda_home/lib/libcudart.so"
    CUDA_HOME=$cuda_home PATH=$cuda_home/bin:$PATH TORCH_CUDA_ARCH_LIST=${CUDA_ARCHS:-8.0;9.0;10.0+PTX} \
      DS_ACCELERATOR=cuda DS_BUILD_OPS=0 DS_BUILD_FUSED_ADAM=1 MAX_JOBS=2 \
      pip install --no-cache-dir --no-build-isolation -r "$pins"
    pip uninstall --yes nvidia-cuda-nvcc nvidia-nvvm nvidia-cuda-crt nvidia-cuda-cccl
    rm -f "$cuda_home/lib64" "$cuda_home/lib/libcudart.so"
    python -c "from deepspeed.git_version_info import installed_ops as o; \
assert o['fused_adam'], 'deepspeed was installed without its fused_adam op'"
    ;;
  *)
    echo "install-deepspeed.sh: unknown accelerator '$accelerator' (cpu or cuda)" >&2
    exit 2
    ;;
esac
python -c "import deepspeed.git_version_info as v; \
print('deepspeed', v.version, 'for', v.accelerator_name, 'with ops', sorted(k for k, on in v.installed_ops.items() if on))"
