"""(temporary stub; replaced by the progress branch)"""
from tqdm.auto import tqdm


def progress_bar(iterable=None, *, total=None, desc: str = "", enabled: bool = True, unit: str = "it"):
    return tqdm(iterable, total=total, desc=desc, disable=not enabled, unit=unit)
