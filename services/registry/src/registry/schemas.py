"""Field types shared by the registry's request bodies."""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

# consent-api's ids: opaque, but their shape lets bad input fail fast with a 422 naming the field.
SampleId = Annotated[str, StringConstraints(pattern=r"^smp_[0-9a-z]{26}$")]
ConsentId = Annotated[str, StringConstraints(pattern=r"^cns_[0-9a-z]{26}$")]
LicenseeId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,39}$")]
LicenseId = Annotated[str, StringConstraints(pattern=r"^lcs_[0-9a-z]{26}$")]
Purpose = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{1,63}$")]
Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Version = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=100)]
ShardId = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:/-]{0,99}$")]
