#!/bin/bash
# Preprocess: run.sh DATA_PATH PARAMETERS_FILE OUTPUT_PATH
python3 /workspace/preprocess.py --data_path="$1" --parameters_file="$2" --output_path="$3"
