"""Write the rows of one stacking group of the dataset table (rule ``describe_dataset``).

Thin Snakemake wrapper: the table is read, checked and written by :mod:`gemred.table`.
"""

import logging

from gemred.table import read_table, write_table

log = logging.getLogger("gemred.describe_group")


def main(smk) -> None:
    logging.basicConfig(
        filename=smk.log[0],
        filemode="w",
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    group = smk.wildcards.group
    log.info("gemred %s: group %s of %s", smk.params.gemred_version, group, smk.input.table)
    table = read_table(smk.input.table)
    members = table[table["group"] == group]
    if members.empty:
        msg = f"{smk.input.table}: no row of group {group!r}"
        raise ValueError(msg)
    write_table(members, smk.output[0])
    log.info("%d files (%s) -> %s", len(members), ", ".join(sorted(set(members["role"]))), smk.output[0])


try:
    main(snakemake)  # noqa: F821  (the object Snakemake injects into a script)
except Exception:
    log.exception("describe_group failed")
    raise
