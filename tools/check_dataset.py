#!/usr/bin/env python
"""
Check a COCO-format detection dataset before training on it.

    python tools/check_dataset.py annotations/instances_train.json images/

Reports missing or unreadable images, image sizes that differ from the JSON, boxes outside the image
or with non-positive size, unknown category or image ids, and images without annotations, then
summary counts. Exits with status 1 if there are errors (warnings alone exit 0).
"""

import argparse
import sys

from dsla.data.check import check_coco_dataset


def main(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("json_file", metavar="JSON")
    parser.add_argument("image_root", metavar="IMAGE_ROOT")
    parser.add_argument(
        "--quick", action="store_true", help="read image headers only, do not decode them"
    )
    parser.add_argument(
        "--max-lines", type=int, default=50, help="problems listed per kind of message"
    )
    args = parser.parse_args(argv)

    report = check_coco_dataset(args.json_file, args.image_root, verify_images=not args.quick)
    for label, messages in (("ERROR", report.errors), ("WARNING", report.warnings)):
        for message in messages[: args.max_lines]:
            print(f"{label}: {message}")
        if len(messages) > args.max_lines:
            print(f"{label}: ... and {len(messages) - args.max_lines} more")
    print("Summary:")
    for kind, count in sorted(report.counts.items()):
        print(f"  {kind}: {count}")
    print(f"{len(report.errors)} errors, {len(report.warnings)} warnings")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
