"""Every subject folder must hold the four modalities and a segmentation, each a readable gzip file."""
import argparse
import gzip
import os

SUFFIXES = ("_t1.nii.gz", "_t1ce.nii.gz", "_t2.nii.gz", "_flair.nii.gz", "_seg.nii.gz")


def subject_is_valid(folder):
    name = os.path.basename(folder)
    return all(os.path.isfile(os.path.join(folder, name + suffix)) for suffix in SUFFIXES)


if __name__ == "__main__":
    parser = argparse.ArgumentParser("BraTS Data Sanity Check")
    parser.add_argument("--data_path", dest="data")
    args = parser.parse_args()
    for entry in sorted(os.listdir(args.data)):
        subject = os.path.join(args.data, entry)
        if os.path.isdir(subject):
            assert subject_is_valid(subject), f"subject {subject} lacks a modality or the segmentation"
            for item in sorted(os.listdir(subject)):
                with gzip.open(os.path.join(subject, item)) as stream:
                    assert stream.read(), f"{item} is empty"
    print("Finished")
