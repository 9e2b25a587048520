"""Real dataset files for the --datasets tests and benchmark: FITS primary headers
(JWST) and ASDF trees (Roman) carrying the keywords the vendored rules select
on, written with astropy and asdf as the observatories' own files are."""

from pathlib import Path

# JWST exposures of several instruments and modes. LAMP='NONE' and TSOVISIT=F are the
# values crds 14.0.3 reads differently in `crds bestrefs` and `getrecommendations`.
JWST = {
    "nircam_image": {
        "INSTRUME": "NIRCAM",
        "DETECTOR": "NRCA1",
        "EXP_TYPE": "NRC_IMAGE",
        "FILTER": "F200W",
        "PUPIL": "CLEAR",
        "CHANNEL": "SHORT",
        "MODULE": "A",
        "READPATT": "RAPID",
        "SUBARRAY": "FULL",
        "CAL_VER": "1.14.0",
    },
    "miri_image": {
        "INSTRUME": "MIRI",
        "DETECTOR": "MIRIMAGE",
        "EXP_TYPE": "MIR_IMAGE",
        "FILTER": "F770W",
        "READPATT": "FAST",
        "SUBARRAY": "FULL",
        "BAND": "N/A",
        "CAL_VER": "1.14.0",
    },
    "nirspec_fixedslit": {
        "INSTRUME": "NIRSPEC",
        "DETECTOR": "NRS1",
        "EXP_TYPE": "NRS_FIXEDSLIT",
        "FILTER": "CLEAR",
        "GRATING": "PRISM",
        "FXD_SLIT": "S200A1",
        "LAMP": "NONE",
        "READPATT": "NRSIRS2RAPID",
        "SUBARRAY": "FULL",
        "SUBSTRT1": 1,
        "SUBSTRT2": 1,
        "SUBSIZE1": 2048,
        "SUBSIZE2": 2048,
        "CAL_VER": "1.14.0",
    },
    "niriss_soss_tso": {
        "INSTRUME": "NIRISS",
        "DETECTOR": "NIS",
        "EXP_TYPE": "NIS_SOSS",
        "FILTER": "CLEAR",
        "PUPIL": "GR700XD",
        "READPATT": "NISRAPID",
        "SUBARRAY": "SUBSTRIP256",
        "TSOVISIT": False,
        "CAL_VER": "1.14.0",
    },
}

# Without CAL_VER crds asks for every NIRCAM type, coronagraphic PSFMASK among them,
# which this imaging exposure has no file for: a real NOT FOUND.
JWST_NO_CAL_VER = {
    "nircam_no_cal_ver": {
        "INSTRUME": "NIRCAM",
        "DETECTOR": "NRCBLONG",
        "EXP_TYPE": "NRC_IMAGE",
        "FILTER": "F444W",
        "PUPIL": "CLEAR",
        "CHANNEL": "LONG",
        "MODULE": "B",
        "READPATT": "BRIGHT1",
        "SUBARRAY": "FULL",
    },
}


def write_fits(path: Path, telescope: str, keywords: dict[str, object]) -> Path:
    """A dataset's primary header (no data), as the archive's files begin."""
    from astropy.io import fits

    header = fits.Header()
    header["TELESCOP"] = telescope
    header["DATE-OBS"] = "2024-03-01"
    header["TIME-OBS"] = "12:00:00"
    for key, value in keywords.items():
        header[key] = value
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(header=header).writeto(path, overwrite=True)
    return path


def write_roman(path: Path, optical_element: str = "F158") -> Path:
    """A Roman WFI exposure's metadata, as an ASDF tree under `roman` (the keys
    crds reads; romancal's files carry the same under roman_datamodels' tags)."""
    import asdf

    tree = {
        "roman": {
            "meta": {
                "telescope": "ROMAN",
                "instrument": {
                    "name": "WFI",
                    "detector": "WFI01",
                    "optical_element": optical_element,
                },
                "exposure": {
                    "type": "WFI_IMAGE",
                    "start_time": "2026-01-01T00:00:00",
                    "ma_table_number": 4,
                },
                "observation": {"start_time": "2026-01-01T00:00:00"},
            }
        }
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    asdf.AsdfFile(tree).write_to(path)
    return path
