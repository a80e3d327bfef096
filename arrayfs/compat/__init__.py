"""Modules named like array_record's, so code written for the wheel runs by
changing its import only::

    # from array_record.python import array_record_module, array_record_data_source
    from arrayfs.compat import array_record_module, array_record_data_source
"""
